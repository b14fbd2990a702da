from reactor.cli import main

main(prog_name="reactor")
