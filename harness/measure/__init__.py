"""Measurements independent of any runtime: accuracy, speed, memory, energy, environment."""
