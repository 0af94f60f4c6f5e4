"""Foreign checkpoint layouts, as data: name maps and the few operations they need."""
