//! Who a fop is for. The FUSE adapter runs each kernel request with the
//! requesting user's ids in scope; the protocol layer sends fops made in
//! that scope as `Request::FopAs`, so the brick can apply
//! `server.root-squash`. Work a mount does for itself (background heals,
//! split-brain policies, unlocks) runs outside any user's scope and goes
//! as a plain `Request::Fop`, which bricks never squash — as gluster
//! exempts its internal clients.

use cairn_common::proto::Creds;
use std::future::Future;

tokio::task_local! {
    static CALLER: Option<Creds>;
}

/// Runs `f` on behalf of the user `who`.
pub async fn as_user<F: Future>(who: Creds, f: F) -> F::Output {
    CALLER.scope(Some(who), f).await
}

/// Runs `f` as the mount's own work, even inside a user's request.
pub async fn internal<F: Future>(f: F) -> F::Output {
    CALLER.scope(None, f).await
}

/// The user the current fop is for, if any.
pub fn current() -> Option<Creds> {
    CALLER.try_with(|c| *c).ok().flatten()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn scopes_nest_and_end() {
        let who = Creds { uid: 0, gid: 0 };
        assert_eq!(current(), None);
        as_user(who, async {
            assert_eq!(current(), Some(who));
            internal(async { assert_eq!(current(), None) }).await;
            assert_eq!(current(), Some(who));
        })
        .await;
        assert_eq!(current(), None);
    }
}
