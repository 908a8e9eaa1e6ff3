from lwzoo.cli import main

main()
