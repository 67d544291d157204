"""MLflow: runs, the registry, promotion and the model folder a registered version holds."""
