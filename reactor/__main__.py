from reactor.cli import main

main()
