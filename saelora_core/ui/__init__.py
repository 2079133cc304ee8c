"""What only the notebooks and widgets use: shared notebook helpers, the training form, the latent explorer."""
