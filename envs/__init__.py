"""worldsim.envs: Gymnasium environments backed by the world model (DESIGN §6).

`import worldsim` registers `worldsim/<Task>-v0` for every task with shipped
weights; `gym.make` gives `WorldEnv`, `gym.make_vec` the native `WorldVectorEnv`.
"""
