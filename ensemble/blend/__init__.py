"""The blend stage: blend methods, `ensemble blend`, `ensemble predict` and the baselines."""
