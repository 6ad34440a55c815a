"""Point-in-time feature pipelines over customer history, the funnel and revenue."""
