"""The report stage: the leaderboard's ranking, plots and renderings."""
