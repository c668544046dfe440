"""The Kaggle stage: the competition loop through the kaggle CLI and the submission rules."""
