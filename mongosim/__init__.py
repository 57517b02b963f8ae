"""mongosim: a simulated MongoDB replica set that the real pymongo driver talks to over TCP."""

from mongosim.sim import MongoSim, ThreadedMongoSim

__all__ = ["MongoSim", "ThreadedMongoSim"]
