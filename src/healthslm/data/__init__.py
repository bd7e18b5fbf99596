"""Raw datasets: where they come from (sources.yaml) and how they are fetched."""
