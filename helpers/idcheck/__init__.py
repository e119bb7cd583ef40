"""Identity checks against the population registry (issue 34): ID_REGISTRY picks one."""
