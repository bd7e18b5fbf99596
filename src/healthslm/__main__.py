from healthslm.cli import main

main()
