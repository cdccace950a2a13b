"""Reading what a study left in MLflow."""

from __future__ import annotations

from mlflow.tracking import MlflowClient


def children(client: MlflowClient, parent_id: str) -> list:
    """The child runs (one per trial) of the parent run ``parent_id``."""
    run = client.get_run(parent_id)
    return client.search_runs([run.info.experiment_id], f"tags.`mlflow.parentRunId` = '{parent_id}'")
