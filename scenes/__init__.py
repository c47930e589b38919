"""Scene stage: recipe schema and loading, distributions and seeding, assets, scene sampling."""
