from mtlrec.cli import main

main()
