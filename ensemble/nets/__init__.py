"""The nets stage: architectures, recipes, learning-rate schedules, augmentation, precision, scoring."""
