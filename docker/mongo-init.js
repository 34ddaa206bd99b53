// The pipeline's own MongoDB user: readWrite on the `tess` database only (not root).
// The official mongo image runs this with mongosh on the FIRST start (empty data
// volume), with the container's environment. A copy ships in the Helm chart
// (k8s/tess-pipeline/files/mongo-init.js); tests/test_deploy_compose.py keeps them equal.
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
