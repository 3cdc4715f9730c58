from surgeon.cli.main import main

main()
