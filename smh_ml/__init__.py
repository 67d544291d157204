"""smh_ml: surface-defect recognition for servo motor housings (the ML library).

Importable and testable without Dagster or MLflow; `pipelines/` wires it into assets.
"""

__version__ = "0.1.0"
