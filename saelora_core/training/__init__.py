"""Training the adapter: configs and recipes, data-driven inits, the loop, its estimate, the dense steering baseline."""
