from fsvideo.cli import main

main()
