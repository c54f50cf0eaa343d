"""Numbers computed from finished artifacts, never stored in them: robustness (attacker-best curves, snapshots,
areas, normalisation), statistics over seeds (scipy.stats), and compute/label accounting along a lineage."""
