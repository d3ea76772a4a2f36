"""Office modes (day, lunch, night, holidays): which one is in force, and manual overrides."""
