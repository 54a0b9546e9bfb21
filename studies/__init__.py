"""Studies that span the stages (above them: the core imports none of this)."""
