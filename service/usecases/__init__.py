"""Use cases shared by the CLI and HTTP: train, score, forecast, feasibility."""
