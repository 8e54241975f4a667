"""Classification, time-series and early-detection metrics; thresholds from validation only."""
