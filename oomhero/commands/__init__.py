"""One module per verb of the CLI: HELP, DESCRIPTION, FLAGS, arguments(parser), run(args)."""
