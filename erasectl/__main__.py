from erasectl.cli import main

main()
