"""Models, scoring runs, recommendations and decisions (filled in by the engine issue)."""
