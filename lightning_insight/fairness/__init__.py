"""Sliced metrics, group-fairness indicators and alerts (FairnessMonitor)."""
