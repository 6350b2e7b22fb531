"""Token lifecycle: records, schedule math, the per-app TokenManager and the scheduler."""
