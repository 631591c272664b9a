from tripmail.cli.main import main

main()
