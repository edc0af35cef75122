"""diagnose: probes (hooks → per-layer statistics), detectors (statistics → alarms), advice, the Doctor, repair."""
