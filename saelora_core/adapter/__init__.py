"""The adapter: a sparse map in SAE latent space, its hooks, the edited forward, generation and saving."""
