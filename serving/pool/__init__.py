"""A version served by a set of engine replicas, and the policies that pick one replica per request."""
