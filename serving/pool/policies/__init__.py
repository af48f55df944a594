"""One file per replica policy, all behind `serving.pool.policy.ReplicaPolicy`."""
