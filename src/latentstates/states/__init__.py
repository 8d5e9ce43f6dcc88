"""States: metric sequences, the HMM, its analyses and the forecast."""
