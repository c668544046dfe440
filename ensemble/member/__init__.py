"""The member stage: one member's process, its checkpoints and callbacks (one per file), its predictions."""
