console.log("appfront");
