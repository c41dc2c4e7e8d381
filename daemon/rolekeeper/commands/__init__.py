"""Admin commands, one module per group; cli.py lists them."""
