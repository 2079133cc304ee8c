"""The SAE substrate: the corpus it learns from, its training and its evaluation."""
