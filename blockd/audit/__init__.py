"""The audit log: a Merkle log of enforcement events that a regulator verifies offline."""
