"""The episodic memory ("Sidekick's Scrapbook"): everything the personas read and said, in
embedded LanceDB under ``HOME/memory``, searchable and retrieved into their prompts.

``service.MemoryService`` is the backend's entry point; importing this package (or
``config``) never imports LanceDB, which takes seconds: that happens in the background.
"""
