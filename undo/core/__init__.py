"""The leaves every stage builds on: the training engine, token data, models, FLOPs, noise, artifacts, errors."""
