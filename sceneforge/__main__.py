from sceneforge.cli import main

main()
