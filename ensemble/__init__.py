"""ensemble: train N seeded CNNs on 28x28 digit CSVs and blend them into a Kaggle submission.

`from ensemble import Job` is the Python API (ensemble.api); the stages live in the subpackages (README,
"How the code is laid out")."""

__version__ = "0.1.0"
__all__ = ["Job"]


def __getattr__(name: str):
    # Job is imported on first use: `import ensemble.member` (every member process) need not load the API
    if name == "Job":
        from .api import Job

        return Job
    raise AttributeError(f"module 'ensemble' has no attribute {name!r}")
