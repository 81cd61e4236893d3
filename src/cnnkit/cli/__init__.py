"""The cnnkit command line (one module per subcommand)."""
