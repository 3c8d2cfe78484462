"""The main job, end to end (grows with the project): every RVC format written, loaded and run."""

from rvc_formats import main

if __name__ == "__main__":
    main()
