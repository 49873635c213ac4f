"""What the tests share: the model zoo and real layouts written as GGUFs (zoo, layouts, real_layouts), the
pins' built binaries and their caches (stock_binary, ik_llama_build, policy_build, cachelock, paths), the
differential drivers that compare a plan with a binary (differential, dry_run, ik_llama_dry_run, plans), the
checkout fixtures, and hypothesis strategies for policies (rule_strategies). Test modules import them as
`from helpers import zoo`."""
