from tripmail.cli import main

main()
