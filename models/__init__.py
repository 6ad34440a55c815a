"""Models: churn, revenue forecast, win/slip; scikit-learn style estimators."""
