// The pipeline's own MongoDB user: readWrite on the `tess` database only (not root).
// The official mongo image runs this with mongosh on the FIRST start (empty data
// volume), with the container's environment. The Helm chart ships this file (a chart
// reads only files inside it); docker/mongo-init.js, which compose mounts, links here.
const user = process.env.TESS_MONGO_USER;
const password = process.env.TESS_MONGO_PASSWORD;
if (!user || !password) {
  throw new Error("TESS_MONGO_USER and TESS_MONGO_PASSWORD must be set");
}
db.getSiblingDB("admin").createUser({
  user: user,
  pwd: password,
  roles: [{ role: "readWrite", db: "tess" }],
});
