"""ensemble: train N seeded CNNs on 28x28 digit CSVs and blend them into a Kaggle submission."""

__version__ = "0.1.0"
